"""RTMP ingest glue: the rtmp/ server, relay, live packager and recorder wired to the catalog and auth."""
