"""`cairn template`: render files from KV and the catalog, consul-template style.

    cairn template -template "nginx.ctmpl:/etc/nginx/conf.d/app.conf:nginx -s reload"
    cairn template -config templates.hcl [-once] [-dry]

Templates come from `-template "source:destination[:command]"` (repeatable) and the `template { }`
blocks of `-config` files (HCL or JSON, repeatable; a directory loads its *.hcl and *.json files
in name order). The agent's address and token are the usual `-http-addr`/`-token` (also
`CAIRN_HTTP_ADDR`, `CONSUL_HTTP_ADDR`, ...); consul-template's `-consul-addr` and `-consul-token`
are accepted too, and so is a config file's `consul { address token }` block.

SIGHUP loads the configuration files and templates again and renders them all (a reload that
fails is logged and the running templates stay). Exit codes follow consul-template where it has
them: 0 done (after `-once`, or stopped by SIGINT or SIGTERM), 1 bad command line, 13 a template
failed to execute, a file could not be written or (with `-once`) a command failed, 14 a
configuration or template that does not load.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import threading
import urllib.request
from typing import Any

from appliance.cli.flags import CliParser, UsageError, command, err, expect_args
from appliance.cli.http_client import add_http_flags, config_from_args, normalize_address
from appliance.config.hcl import HCLError, Repeated, loads as hcl_loads
from appliance.template import Template, TemplateError
from appliance.template.config import ConfigError, RunConfig, TemplateConfig, merge_file, parse_flag, parse_wait
from appliance.template.runner import AgentHTTP, Runner

USAGE = "cairn template [options]"
DESCRIPTION = """\
Renders files from the agent's KV store and catalog with consul-template's language
(Go text/template plus key, ls, tree, service, services, node, nodes, env, ...), and
keeps them current: each value a template reads is watched with blocking queries, the
file is rewritten atomically when its content changes, and its command runs then.
See docs/templates.md."""

EXIT_CONFIG_ERROR = 14


def build_parser() -> CliParser:
    parser = CliParser("cairn template", USAGE, DESCRIPTION)
    parser.flag("template", action="append", default=[], metavar="<source:destination[:command]>",
                help="A template to render: source file, destination file and an optional command. Repeatable.")
    parser.flag("config", action="append", default=[], metavar="<path>",
                help="A configuration file or directory (HCL or JSON) with template { } blocks. Repeatable.")
    parser.flag("once", action="store_true", help="Render every template once, run the commands and exit.")
    parser.flag("dry", action="store_true", help="Print the rendered templates on stdout instead of writing them.")
    parser.flag("wait", default="", metavar="<min[:max]>",
                help="Quiescence: render once the data has been quiet for min, at most max after a change.")
    parser.flag("consul-addr", default=None, metavar="<address>", help="Same as -http-addr (consul-template's name).")
    parser.flag("consul-token", default=None, metavar="<value>", help="Same as -token (consul-template's name).")
    add_http_flags(parser, server=False)
    return parser


def _normalize(value: Any) -> Any:
    """HCL's repeated keys are lists already; nested values are plain dicts and lists."""
    if isinstance(value, Repeated):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _config_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith((".hcl", ".json"))]
    return [path]


def load_config(paths: list[str]) -> RunConfig:
    run = RunConfig()
    for path in [f for p in paths for f in _config_files(p)]:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        is_json = path.endswith(".json") or text.lstrip().startswith("{")
        try:
            data = json.loads(text) if is_json else _normalize(hcl_loads(text))
        except (ValueError, HCLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("template"), Repeated):
            data["template"] = list(data["template"])
        run = merge_file(run, data, octal_ints=not is_json, origin=path)
    return run


def load_templates(configs: list[TemplateConfig]) -> list[tuple[TemplateConfig, Template]]:
    loaded = []
    for cfg in configs:
        if cfg.contents is not None:
            text = cfg.contents
        else:
            try:
                with open(cfg.source, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise ConfigError(f"template {cfg.source}: {exc.strerror or exc}") from None
        template = Template(cfg.name, text, left=cfg.left_delimiter, right=cfg.right_delimiter,
                            denylist=cfg.function_denylist)
        loaded.append((cfg, template))
    return loaded


def _opener(base_url: str, verify_tls: bool) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if base_url.startswith("https://") and not verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


@command
def run(argv: list[str]) -> int:
    args = build_parser().parse(argv)
    expect_args(args.args, 0, 0)
    args.http_addr = args.http_addr or args.consul_addr
    args.token = args.token or args.consul_token
    try:
        cfg = load_config(args.config)
        cfg.templates += [parse_flag(t) for t in args.template]
        wait = parse_wait(args.wait) if args.wait else cfg.wait
        if not cfg.templates:
            raise UsageError("Error: no templates given (use -template or -config)")
        templates = load_templates(cfg.templates)
    except (ConfigError, TemplateError) as exc:
        err(f"Error: {exc}")
        return EXIT_CONFIG_ERROR
    from_env = os.environ.get("CAIRN_HTTP_ADDR") or os.environ.get("CONSUL_HTTP_ADDR")
    if not args.http_addr and cfg.address and not from_env:
        args.http_addr = cfg.address
    http = config_from_args(args)
    token = http.token or cfg.token
    base_url = normalize_address(http.base_url)
    fetch = AgentHTTP(base_url, token, _opener(base_url, http.verify_tls))
    runner = Runner(templates, fetch, once=args.once, dry=args.dry, wait=wait, env=os.environ)

    def reload() -> list[tuple[TemplateConfig, Template]]:
        again = load_config(args.config)
        return load_templates(again.templates + [parse_flag(t) for t in args.template])

    runner.reloader = reload
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: runner.stop())
        signal.signal(signal.SIGHUP, lambda *_: runner.request_reload())
    sys.stdout.flush()
    return runner.run()
