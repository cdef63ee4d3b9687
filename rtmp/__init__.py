"""RTMP wire protocol (sans-I/O cores: chunk stream, control messages, AMF0, handshake) and its asyncio edge."""
