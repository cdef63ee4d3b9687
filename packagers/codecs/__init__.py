"""The one place that knows codec and container headers; nothing else parses one."""
