"""The ``mirrorplane`` command: serve, run (serve + a local Envoy), echo, translate, and the admin
API clients nodes, status and snapshot.

What only other commands use (the echo's servers, the local Envoy) is imported where they start,
before anything listens: ``serve`` does not pay for it (docs/performance.md, "Cold start: the
imports, ninth round")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs
from .admin import client as admin_client
from .echo import options as echo_options
from .errors import MirrorplaneError, SourceError, UsageError
from .gatewayapi.translator import DEFAULT_CONTROLLER, Options
from .providers.base import Provider
from .serve import ControlPlane, Extension
from .shadow import client as shadow_client
from .shadow import collect
from .tls import TlsFiles
from .xds.translator import DEFAULT_MIRROR_BODY_LIMIT, MAX_MIRROR_BODY_LIMIT, XdsOptions

if TYPE_CHECKING:
    from .localenvoy import LocalEnvoy

log = logging.getLogger("mirrorplane")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])


def _add_serving(p: argparse.ArgumentParser, *, dir_optional: bool = False) -> None:
    p.add_argument(
        "dir",
        type=Path,
        nargs="?" if dir_optional else None,
        help="folder (or file) of Gateway API and Service/EndpointSlice YAML, watched",
    )
    p.add_argument(
        "--xds-address",
        default="127.0.0.1",
        help="address the gRPC port binds (default 127.0.0.1); beyond loopback it needs mutual TLS or --insecure",
    )
    p.add_argument(
        "--xds-port",
        type=int,
        default=18000,
        help="gRPC port: ADS, admin API, CSDS, health, reflection (default 18000)",
    )
    p.add_argument("--http-address", default="127.0.0.1", help="address the HTTP port binds (default 127.0.0.1)")
    p.add_argument(
        "--http-port", type=int, default=19001, help="HTTP port: /metrics, /healthz, /readyz (default 19001)"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --xds-address without mutual TLS (anyone reaching it reads every Gateway's "
        "config and keys), and Envoy's NACK messages on a non-loopback /metrics",
    )
    p.add_argument("--controller-name", default=DEFAULT_CONTROLLER, help="GatewayClass controllerName to serve")
    p.add_argument(
        "--no-shadow",
        action="store_true",
        help="do not compare mirrored answers with the primary's: no access log on Envoys' routers (docs/shadow-testing.md)",
    )
    p.add_argument(
        "--shadow-tags-in-routes",
        action="store_true",
        help="put each mirrored route's shadow tag into Envoy's route table, for Envoys that send their access logs "
        "to `mirrorplane collect` (docs/shadow-testing.md); costs Envoy more on every route update",
    )
    _add_mirror_body_limit(p)
    _add_common(p)


def _add_mirror_body_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mirror-body-limit",
        type=_byte_size,
        default=DEFAULT_MIRROR_BODY_LIMIT,
        metavar="BYTES",
        help="mirror only requests whose body is known to be at most this size, e.g. 1048576, 512Ki, 8Mi "
        "(default 1Mi); larger ones reach only the primary (docs/mirroring.md)",
    )


_SIZE_UNITS = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _byte_size(text: str) -> int:
    """Bytes as a plain number or with a Kubernetes-style binary suffix (Ki, Mi, Gi)."""
    number, unit = text.rstrip("KMGi"), text[len(text.rstrip("KMGi")) :]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes, e.g. 1048576, 512Ki or 8Mi")
    value = int(number) * _SIZE_UNITS[unit]
    if value > MAX_MIRROR_BODY_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_MIRROR_BODY_LIMIT // 1024**3}Gi")
    return value


def _add_kubernetes(p: argparse.ArgumentParser) -> None:
    k = p.add_argument_group("Kubernetes (serve --kubernetes instead of DIR)")
    k.add_argument(
        "--kubernetes", action="store_true", help="watch a cluster's Gateway API objects and write their status"
    )
    k.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster service account, else ~/.kube/config)"
    )
    k.add_argument(
        "--gateway-service",
        metavar="NS/NAME",
        help="the Envoy fleet's Service: its LoadBalancer ingress (else ClusterIP) becomes Gateway status.addresses",
    )
    k.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or "mirrorplane-system",
        help="namespace of the status writer's Lease (default: $POD_NAMESPACE, else mirrorplane-system)",
    )
    k.add_argument("--lease-name", default="mirrorplane-status-writer")
    k.add_argument(
        "--lease-duration", type=float, default=15.0, help="seconds before a standby replica takes over (default 15)"
    )
    k.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        help="this replica's Lease holder identity (default: $POD_NAME)",
    )
    k.add_argument(
        "--no-leader-election", action="store_true", help="write status without holding the Lease (one replica only)"
    )


def _source(args: argparse.Namespace) -> tuple[Provider, list[Extension]]:
    """The provider (a folder, or the cluster) and what runs beside it (status writer + Lease)."""
    if not getattr(args, "kubernetes", False):
        if args.dir is None:
            raise UsageError("give a folder of YAML to serve, or --kubernetes")
        # Only here: the files provider's validation (the CRD schemas, the CEL library) and its
        # watcher are ~6 MB of a serving process that `serve --kubernetes` never uses.
        from .providers.files import FileProvider

        return FileProvider(args.dir), []
    if args.dir is not None:
        raise UsageError(f"--kubernetes serves a cluster: drop {args.dir}")
    from .providers.k8s_status import KubernetesStatus
    from .providers.kubernetes import KubernetesProvider
    from .providers.leader import LeaseOptions

    service = None
    if args.gateway_service:
        ns, _, name = args.gateway_service.partition("/")
        if not ns or not name:
            raise UsageError(f"--gateway-service {args.gateway_service!r}: expected NAMESPACE/NAME")
        service = (ns, name)
    d = args.lease_duration
    lease = (
        None
        if args.no_leader_election
        else LeaseOptions(
            namespace=args.lease_namespace,
            name=args.lease_name,
            identity=args.identity,
            lease_duration=d,
            renew_deadline=d * 2 / 3,
            retry_period=d * 2 / 15,
        )
    )
    provider = KubernetesProvider(args.kubeconfig)
    return provider, [
        KubernetesStatus(provider, controller_name=args.controller_name, lease=lease, gateway_service=service)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirrorplane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a folder of YAML (or a cluster: --kubernetes) to Envoys over ADS")
    _add_serving(serve, dir_optional=True)
    _add_kubernetes(serve)
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: the xDS port speaks TLS only")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    serve.add_argument("--client-ca", type=Path, help="PEM CA: require client certificates signed by it (mutual TLS)")

    run = sub.add_parser("run", help="serve + a local Envoy per Gateway (the quick start)")
    _add_serving(run)
    run.add_argument("--admin-port", type=int, default=19000, help="the (first) Envoy's admin port (default 19000)")
    run.add_argument("--envoy-log-level", default="warning", help="Envoy's log level (default warning)")
    run.add_argument(
        "--listen-address",
        default="127.0.0.1",
        help="the address the local Envoy's Gateway listeners bind (default 127.0.0.1; 0.0.0.0 for other machines)",
    )
    run.add_argument(
        "--echo",
        action="append",
        default=[],
        metavar="NAME=PORT[,grpc=PORT][,PATH=CODE...]",
        help="also start an echo backend NAME on 127.0.0.1:PORT, its gRPC echo on grpc=PORT, answering the "
        "exact PATH with CODE (e.g. /v2-only=500; repeatable)",
    )

    echo_p = sub.add_parser("echo", help="an echo HTTP backend that logs every request")
    echo_options.add_arguments(echo_p)

    boot = sub.add_parser(
        "bootstrap",
        help="print the Envoy bootstrap for one Envoy (controlplane/bootstrap.yaml rendered), e.g. from an init container",
    )
    boot.add_argument("--gateway", required=True, help="the Gateway this Envoy serves, NAMESPACE/NAME (node.cluster)")
    boot.add_argument(
        "--node-id",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="unique id of this Envoy (default: $POD_NAME, else the host name)",
    )
    boot.add_argument("--xds-host", default="127.0.0.1", help="where mirrorplane's xDS port is reachable")
    boot.add_argument("--xds-port", type=int, default=18000)
    boot.add_argument("--admin-port", type=int, default=19000)
    boot.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    boot.add_argument(
        "--xds-ca", help="TLS to the xDS port: the CA file (as Envoy sees it) that signed its certificate"
    )
    boot.add_argument("--xds-cert", help="mutual TLS: this Envoy's certificate file")
    boot.add_argument("--xds-key", help="mutual TLS: this Envoy's private key file")
    boot.add_argument("--xds-sni", help="TLS: the server name to ask for (default: none)")
    boot.add_argument(
        "--embed-certs",
        action="store_true",
        help="write the contents of --xds-ca/--xds-cert/--xds-key into the bootstrap, not their paths, so that "
        "Envoy needs no access to those files (--output is then written 0600)",
    )
    boot.add_argument(
        "--als-address",
        metavar="HOST:PORT",
        help="shadow testing: send access logs to `mirrorplane collect` there (default: the xDS port)",
    )

    certs = sub.add_parser(
        "certs",
        help="issue a CA, the control plane's certificate, the operator's and one per Gateway's Envoys, for mTLS (idempotent)",
    )
    certs.add_argument(
        "--server-name",
        action="append",
        required=True,
        help="a DNS name or IP Envoys reach the control plane by (repeatable)",
    )
    certs.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="NS/NAME",
        help="issue the client certificate of this Gateway's Envoys, spiffe://mirrorplane/ns/NS/gateway/NAME (repeatable)",
    )
    where = certs.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out",
        type=Path,
        help="write DIR/ca, DIR/server, DIR/operator and DIR/gateways/NS/NAME (ca.crt, tls.crt, tls.key)",
    )
    where.add_argument("--kubernetes", action="store_true", help="create kubernetes.io/tls Secrets instead")
    certs.add_argument("--kubeconfig", type=Path, help="with --kubernetes: a kubeconfig (default: in-cluster config)")
    certs.add_argument("--namespace", default="mirrorplane-system", help="with --kubernetes: where the Secrets go")
    certs.add_argument(
        "--ca-secret", default="mirrorplane-xds-ca", help="the CA (certificate and key), for this step only"
    )
    certs.add_argument("--server-secret", default="mirrorplane-xds-server")
    certs.add_argument("--operator-secret", default="mirrorplane-xds-operator")

    tr = sub.add_parser("translate", help="offline: YAML in, Envoy JSON and Gateway API status out")
    tr.add_argument("dir", type=Path)
    tr.add_argument("--controller-name", default=DEFAULT_CONTROLLER)
    _add_mirror_body_limit(tr)

    admin_client.add_commands(sub)  # nodes, status, snapshot: clients of the admin API
    shadow_client.add_command(sub)  # diff: shadow testing's client
    _add_common(collect.add_arguments(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A :class:`MirrorplaneError` (bad input, an unusable environment) is one line
    and exit 1; any other exception is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except MirrorplaneError as exc:
        print(f"mirrorplane: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "echo":
        from .echo.cli import main_from_args

        return main_from_args(args)
    if args.command == "translate":
        return _translate(args)
    if args.command == "bootstrap":
        return _bootstrap(args)
    if args.command == "certs":
        return asyncio.run(_certs(args))
    if args.command in admin_client.COMMANDS:
        return admin_client.run(args)
    if args.command == "diff":
        return shadow_client.run(args)
    if args.command == "collect":
        logs.setup(args.log_level, args.log_format)
        return collect.main(args)
    logs.setup(args.log_level, args.log_format)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


def _translate(args: argparse.Namespace) -> int:
    from .offline import translate_folder

    if not args.dir.exists():
        raise SourceError(f"{args.dir} does not exist")
    out = translate_folder(
        args.dir,
        options=Options(controller_name=args.controller_name),
        xds_options=XdsOptions(mirror_body_limit=args.mirror_body_limit),
    )
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    for err in out["errors"]:
        print(f"mirrorplane: {err['source']}: {err['object']}: {err['message']}", file=sys.stderr)
    return 1 if out["errors"] else 0


def _host_port_arg(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--als-address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _bootstrap(args: argparse.Namespace) -> int:
    if "/" not in args.gateway:
        raise UsageError(f"--gateway {args.gateway!r}: expected NAMESPACE/NAME")
    if args.embed_certs and not args.xds_ca:
        raise UsageError("--embed-certs: give the files to embed (--xds-ca, and --xds-cert and --xds-key)")
    als = _host_port_arg(args.als_address) if args.als_address else None
    from .localenvoy import XdsTls, render_bootstrap

    tls = XdsTls(args.xds_ca, args.xds_cert, args.xds_key, args.xds_sni, args.embed_certs) if args.xds_ca else None
    text = render_bootstrap(
        node_id=args.node_id,
        node_cluster=args.gateway,
        xds_host=args.xds_host,
        xds_port=args.xds_port,
        admin_port=args.admin_port,
        xds_tls=tls,
        als_address=als,
    )
    if args.output:
        try:
            if args.embed_certs:  # the Envoy's private key is in it
                fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)  # a file that was already there keeps its mode otherwise
                with os.fdopen(fd, "w") as out:
                    out.write(text)
            else:
                args.output.write_text(text)
        except OSError as exc:
            raise UsageError(f"--output {args.output}: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return 0


async def _certs(args: argparse.Namespace) -> int:
    from . import certs  # only here: cryptography costs a serving process ~9 MB

    if args.out:
        issued, kept = certs.ensure_folder(args.out, args.server_name, args.gateway)
        what = [f"issued {p}/" for p in issued] + [f"kept {p}/" for p in kept]
    else:
        for gateway in args.gateway:
            certs.gateway_secret(gateway)  # a bad --gateway fails before the API is asked anything
        from .providers.kubeapi import KubeApi  # only here: the Kubernetes client costs ~40 MB

        api = await KubeApi.connect(args.kubeconfig)
        try:
            created, kept_names = await certs.ensure_secrets(
                api,
                args.namespace,
                args.server_name,
                args.gateway,
                ca_secret=args.ca_secret,
                server_secret=args.server_secret,
                operator_secret=args.operator_secret,
            )
        finally:
            await api.close()
        what = [f"created Secret {args.namespace}/{n}" for n in created]
        what += [f"kept Secret {args.namespace}/{n}" for n in kept_names]
    print("\n".join(what))
    return 0


def _parse_echo(spec: str) -> tuple[str, int, int | None, dict[str, int]]:
    """``NAME=PORT[,grpc=PORT][,PATH=CODE...]``: the echo's HTTP port, optionally its gRPC port,
    and exact paths answered with CODE (shadow testing's seed: a mirror that fails on one path)."""
    head, *rest = spec.split(",")
    name, _, port = head.partition("=")
    grpc_port: int | None = None
    paths: dict[str, int] = {}
    usage = f"--echo {spec!r}: expected NAME=PORT[,grpc=PORT][,PATH=CODE...], e.g. pipy=8081,grpc=8083,/v2-only=500"
    if not name or not port.isdigit():
        raise UsageError(usage)
    for part in rest:
        key, _, value = part.partition("=")
        if key == "grpc" and value.isdigit():
            grpc_port = int(value)
            continue
        try:
            path, code = echo_options.path_status_arg(part)
        except argparse.ArgumentTypeError:
            raise UsageError(usage) from None
        paths[path] = code
    return name, int(port), grpc_port, paths


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if args.command == "run":
        from .localenvoy import envoy_binary  # here, not on the loop once it serves

        envoy_binary()  # before anything listens: without Envoy, `run` has nothing to start
    echos = [_parse_echo(s) for s in getattr(args, "echo", [])]
    if echos:
        from .echo.cli import run_echo  # here, not on the loop once it serves
    tls = None
    if getattr(args, "tls_cert", None) or getattr(args, "tls_key", None):
        if not (args.tls_cert and args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = TlsFiles(args.tls_cert, args.tls_key, args.client_ca)
    elif getattr(args, "client_ca", None):
        raise UsageError("--client-ca needs --tls-cert and --tls-key")
    provider, extensions = _source(args)
    plane = ControlPlane(
        provider,
        xds_host=args.xds_address,
        xds_port=args.xds_port,
        http_host=args.http_address,
        http_port=args.http_port,
        options=Options(controller_name=args.controller_name),
        xds_options=XdsOptions(
            mirror_body_limit=args.mirror_body_limit,
            shadow=not args.no_shadow,
            shadow_tags_in_routes=args.shadow_tags_in_routes,
            # Envoys in a cluster or compose must accept traffic from elsewhere; the local one does not.
            bind_address=args.listen_address if args.command == "run" else XdsOptions.bind_address,
        ),
        tls=tls,
        insecure=args.insecure,
        extensions=extensions,
    )
    await plane.start()
    tasks = [
        asyncio.create_task(run_echo(port, name, grpc_port=grpc_port, path_status=paths))
        for name, port, grpc_port, paths in echos
    ]
    envoys = []
    try:
        if args.command == "run":
            envoys = await _start_envoys(plane, args)
            if not envoys:
                return 1
            if plane.page_url:
                print(
                    f"mirrorplane run: the page is at {plane.page_url} (Gateways, Envoys, mirrors and how they differ)",
                    flush=True,
                )
        await stop.wait()
        return 0
    finally:
        for envoy in envoys:
            await envoy.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await plane.stop()


def _dial_host(bind: str) -> str:
    """Where a local Envoy reaches a port bound to ``bind`` (a wildcard includes loopback)."""
    host = bind.strip("[]")
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def _start_envoys(plane: ControlPlane, args: argparse.Namespace) -> list[LocalEnvoy]:
    from .localenvoy import LocalEnvoy  # imported by _serve already, before anything listened

    gateways = plane.cache.gateways()
    if not gateways:
        print(
            f"mirrorplane: error: no Gateway in {args.dir} uses a GatewayClass with controllerName "
            f"{args.controller_name!r}; nothing for Envoy to serve",
            file=sys.stderr,
        )
        return []
    envoys = []
    for i, gateway in enumerate(gateways):
        envoy = LocalEnvoy(
            node_id=f"local-{gateway.replace('/', '-')}",
            gateway=gateway,
            xds_host=_dial_host(args.xds_address),
            xds_port=args.xds_port,
            admin_port=args.admin_port if i == 0 else 0,
            log_level=args.envoy_log_level,
            log_prefix=f"envoy {gateway}",
        )
        await envoy.start()
        envoys.append(envoy)
        ports = [lst.port for lst in plane.controller.gateways[gateway].listeners]
        log.info("envoy.started gateway=%s admin=%s listener_ports=%s", gateway, envoy.admin_url, ports)
    return envoys


if __name__ == "__main__":
    sys.exit(main())
