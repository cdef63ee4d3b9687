"""`gateway nginx-config`: the nginx load balancer's configuration for any list of gateway nodes.

One source of truth: nginx/templates/*.tmpl hold the configuration; this module only fills in the node lists, ports,
paths and the cache switch, and nginx/gateway.conf is its output for three local nodes (a test re-renders it from
the command line written in its header and compares). The templates use ``{{ name }}`` placeholders, since ``$``
and braces are nginx's own syntax. A placeholder alone on a line takes a multi-line value, indented like the
placeholder; an empty value removes the line.

Every value is validated before it reaches the file: a node address or a path is pasted into nginx syntax, so a
stray ``;`` or brace would change the configuration's meaning rather than fail.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import parse_node

TEMPLATES = Path(__file__).resolve().parents[2] / "nginx" / "templates"
DEBIAN_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian builds the stream module dynamic
_PLACEHOLDER = re.compile(r"\{\{ *([a-z_]+) *\}\}")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_LISTEN = re.compile(r"(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|\*):)?([0-9]{1,5})")
_SIZE = re.compile(r"[0-9]+[kKmMgG]?")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")  # no blanks, quotes, ';', braces, '$' or '#'
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class NginxConfig:
    """What varies between deployments; everything else is in the templates."""

    nodes: tuple[str, ...]  # host:port of each `gateway serve` node
    listen: str = "80"  # port or address:port of the HTTP balancer
    rtmp_nodes: tuple[str, ...] = ()  # host:port of RTMP ingest: the first is active, the rest are backups
    rtmp_listen: str = "1935"
    cache_dir: str = "/var/lib/nginx/gateway-cache"  # nginx creates the last component; Debian has /var/lib/nginx
    cache_size: str = "10g"  # nginx size syntax; "0" disables the cache
    log_dir: str = "/var/log/nginx"
    pid_file: str = "/run/nginx-gateway.pid"
    temp_dir: str = ""  # an existing directory for nginx's temporary files; "" keeps the compiled-in paths
    user: str = "www-data"  # worker processes' user when the master runs as root
    stream_module: str = DEBIAN_STREAM_MODULE  # "" when nginx has the stream module built in
    max_fails: int = 2
    fail_timeout: int = 5  # seconds
    extra_http: str = field(default="", compare=False)  # raw directives appended to http {} (the benchmark's)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("at least one --node host:port is needed")
        for node in (*self.nodes, *self.rtmp_nodes):
            _check_port(_HOST_PORT, node, "node", "host:port")
        for name in ("nodes", "rtmp_nodes"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name.replace('_', '-')}: a node is listed twice")
        _check_port(_LISTEN, self.listen, "listen", "port or address:port")
        _check_port(_LISTEN, self.rtmp_listen, "rtmp-listen", "port or address:port")
        if not _SIZE.fullmatch(self.cache_size):
            raise ValueError(f"cache-size {self.cache_size!r} is not an nginx size such as 512m or 10g (0: off)")
        for name in ("cache_dir", "log_dir", "pid_file", "temp_dir"):
            value = getattr(self, name)
            if (value or name != "temp_dir") and not _SAFE_PATH.fullmatch(value):
                raise ValueError(f"{name.replace('_', '-')} {value!r}: use a path without blanks, quotes or any of "
                                 "; { } $ #")
        if self.stream_module and not _SAFE_PATH.fullmatch(self.stream_module):
            raise ValueError(f"stream-module {self.stream_module!r} is not a plain path")
        if not _USER.fullmatch(self.user):
            raise ValueError(f"user {self.user!r} is not a user name")
        if self.max_fails < 1 or self.fail_timeout < 1:
            raise ValueError("max-fails and fail-timeout must be >= 1")

    @property
    def cache_enabled(self) -> bool:
        return int(self.cache_size.rstrip("kKmMgG")) > 0

    def arguments(self) -> list[str]:
        """The `gateway nginx-config` arguments that render this configuration (written into its header)."""
        d = NginxConfig(nodes=("x:1",))
        args: list[str] = []
        for node in self.nodes:
            args += ["--node", node]
        if self.listen != d.listen:
            args += ["--listen", self.listen]
        for node in self.rtmp_nodes:
            args += ["--rtmp-node", node]
        for option, name in (("--rtmp-listen", "rtmp_listen"), ("--cache-dir", "cache_dir"),
                             ("--cache-size", "cache_size"), ("--log-dir", "log_dir"), ("--pid-file", "pid_file"),
                             ("--temp-dir", "temp_dir"), ("--user", "user"), ("--stream-module", "stream_module"),
                             ("--max-fails", "max_fails"), ("--fail-timeout", "fail_timeout")):
            if getattr(self, name) != getattr(d, name):
                args += [option, str(getattr(self, name))]
        return args


def _check_port(pattern: re.Pattern, value: str, what: str, form: str) -> None:
    m = pattern.fullmatch(value)
    if m is None or not 1 <= int(m.group(1)) <= 65535:
        raise ValueError(f"{what} {value!r} is not {form} (port 1-65535)")


def render(config: NginxConfig) -> str:
    """The complete nginx.conf (main context: events, http and, with RTMP nodes, stream)."""
    stream = ""
    if config.rtmp_nodes:
        inner = render_block(config, "stream").rstrip("\n").splitlines()
        stream = "stream {\n" + "\n".join(("    " + line) if line else "" for line in inner) + "\n}"
    load_module = f"load_module {config.stream_module};" if stream and config.stream_module else ""
    temp_paths = "\n".join(f"{kind}_temp_path {config.temp_dir}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")) if config.temp_dir else ""
    return fill(
        _template("gateway.conf.tmpl"),
        arguments=shlex.join(config.arguments()),
        load_module=load_module,
        user=config.user,
        pid_file=config.pid_file,
        log_dir=config.log_dir,
        temp_paths=temp_paths,
        http_block=render_block(config, "http").rstrip("\n"),
        http_extra=config.extra_http.strip("\n"),
        stream=stream,
    )


def render_block(config: NginxConfig, block: str) -> str:
    """What the gateway adds inside nginx's ``http {}`` or ``stream {}`` block (``--snippet``: an ``include`` of it in
    an existing configuration). Every name it defines starts with gateway_, and its tuning is inside its own server."""
    if block == "stream":
        if not config.rtmp_nodes:
            raise ValueError("--snippet stream needs at least one --rtmp-node")
        first, *backups = config.rtmp_nodes
        rtmp_servers = [f"server {first} max_fails=1 fail_timeout={config.fail_timeout}s;"]
        rtmp_servers += [f"server {n} backup;" for n in backups]
        return fill(_template("stream.conf.tmpl"), log_dir=config.log_dir, rtmp_listen=config.rtmp_listen,
                    rtmp_servers="\n".join(rtmp_servers))
    cache_path = ""
    if config.cache_enabled:
        cache_path = (f"proxy_cache_path {config.cache_dir} levels=1:2 keys_zone=gateway_cache:64m\n"
                      f"                 max_size={config.cache_size} inactive=1d use_temp_path=off;")
    return fill(
        _template("http.conf.tmpl"),
        log_dir=config.log_dir,
        http_servers="\n".join(f"server {n} max_fails={config.max_fails} fail_timeout={config.fail_timeout}s;"
                                for n in config.nodes),
        cache_path=cache_path,
        cache_zone="gateway_cache" if config.cache_enabled else "off",
        listen=config.listen,
    )


def _template(name: str) -> str:
    path = TEMPLATES / name
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"nginx template {path} is missing (it ships in the repository's nginx/ folder)")


def fill(template: str, **values: str) -> str:
    """Replace every ``{{ name }}``; a KeyError names a placeholder without a value, a ValueError an unused value."""
    used: set[str] = set()
    out: list[str] = []
    for line in template.splitlines():
        m = _PLACEHOLDER.fullmatch(line.strip())
        if m:  # a whole-line placeholder: a block, indented like the placeholder, or nothing
            used.add(m.group(1))
            value = values[m.group(1)]
            indent = line[: len(line) - len(line.lstrip())]
            out += [(indent + v) if v.strip() else "" for v in value.splitlines()]
            continue

        def one(match: re.Match) -> str:
            used.add(match.group(1))
            value = values[match.group(1)]
            if "\n" in value:
                raise ValueError(f"placeholder {match.group(1)} is inside a line: its value must be one line")
            return value

        out.append(_PLACEHOLDER.sub(one, line))
    unused = set(values) - used
    if unused:
        raise ValueError(f"the template has no placeholder for {sorted(unused)}")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out))  # a removed block leaves one blank line, not two
    return text.strip("\n") + "\n"


def add_nginx_config_command(sub: argparse._SubParsersAction) -> None:
    d = NginxConfig(nodes=("x:1",))
    p = sub.add_parser("nginx-config", help="print the nginx load balancer configuration for a pool of nodes",
                       description="Render nginx/templates for a pool of `gateway serve` nodes (see nginx/README.md).")
    p.add_argument("--node", action="append", default=[], metavar="HOST:PORT",
                   help="a gateway node (repeat for each; HTTP is hashed on the entry across them)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="take the nodes from this gateway.toml's `nodes` (the pool's list, which analytics also "
                        "use) when no --node is given")
    p.add_argument("--listen", default=d.listen, metavar="[ADDR:]PORT", help=f"HTTP listen (default {d.listen})")
    p.add_argument("--rtmp-node", action="append", default=[], metavar="HOST:PORT",
                   help="an RTMP ingest node: the first is active, the others are its backups (no stream block "
                        "without one)")
    p.add_argument("--rtmp-listen", default=d.rtmp_listen, metavar="[ADDR:]PORT")
    p.add_argument("--cache-dir", default=d.cache_dir, metavar="DIR", help=f"proxy cache (default {d.cache_dir})")
    p.add_argument("--cache-size", default=d.cache_size, metavar="SIZE",
                   help=f"proxy cache max_size, nginx syntax (default {d.cache_size}; 0 disables the cache)")
    p.add_argument("--log-dir", default=d.log_dir, metavar="DIR", help=f"access and error logs (default {d.log_dir})")
    p.add_argument("--pid-file", default=d.pid_file, metavar="FILE")
    p.add_argument("--temp-dir", default=d.temp_dir, metavar="DIR",
                   help="an existing directory for nginx's temporary files (default: nginx's compiled-in paths)")
    p.add_argument("--user", default=d.user, help=f"worker processes' user (default {d.user})")
    p.add_argument("--stream-module", default=d.stream_module, metavar="FILE.so",
                   help="load_module for the RTMP stream block ('' when built in)")
    p.add_argument("--max-fails", type=int, default=d.max_fails, metavar="N",
                   help=f"failures within --fail-timeout that take a node out (default {d.max_fails})")
    p.add_argument("--fail-timeout", type=int, default=d.fail_timeout, metavar="SECONDS",
                   help=f"how long a failed node stays out before traffic tries it again (default {d.fail_timeout})")
    p.add_argument("--snippet", choices=("http", "stream"), default=None,
                   help="only what goes inside an existing http {} (or stream {}) block, for an include")
    p.add_argument("-o", "--output", type=Path, default=None, help="write here instead of standard output")
    p.set_defaults(func=cmd_nginx_config)


def nodes_of_config(path: Path) -> tuple[str, ...]:
    """The ``nodes`` of a gateway.toml as host:port (their ``admin=`` parts are the analytics', not nginx's)."""
    with open(path, "rb") as f:
        try:
            nodes = tomllib.load(f).get("nodes", [])
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise ValueError(f"{path}: nodes must be an array of strings")
    parsed = [parse_node(n) for n in nodes]
    return tuple(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port, _, _ in parsed)


def config_from_args(args: argparse.Namespace) -> NginxConfig:
    nodes = tuple(args.node) or (nodes_of_config(args.config) if args.config is not None else ())
    if not nodes:
        raise ValueError("no nodes: give --node HOST:PORT (repeated) or --config FILE with nodes = [...]")
    return NginxConfig(
        nodes=nodes, listen=args.listen, rtmp_nodes=tuple(args.rtmp_node), rtmp_listen=args.rtmp_listen,
        cache_dir=args.cache_dir, cache_size=args.cache_size, log_dir=args.log_dir, pid_file=args.pid_file,
        temp_dir=args.temp_dir, user=args.user, stream_module=args.stream_module, max_fails=args.max_fails, fail_timeout=args.fail_timeout,
    )


def cmd_nginx_config(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        if args.snippet:
            command = shlex.join(["gateway", "nginx-config", *config.arguments(), "--snippet", args.snippet])
            text = (f"# Generated by: {command}\n# Include it inside an existing {args.snippet} {{}} block: "
                    f"include /etc/nginx/gateway-{args.snippet}.conf;\n" + render_block(config, args.snippet))
        else:
            text = render(config)
    except (ValueError, OSError) as e:
        print(f"gateway nginx-config: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0
