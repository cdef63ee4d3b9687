"""The one exception for every RTMP protocol violation; the message is one line starting with the function name."""


class RtmpError(Exception): pass
