"""Export a checkpoint once and push it to every Triton replica: ``instructrec export ... --push`` per pod.

Usage (the push-model Job, k8s/tasks/push-model)::

    python /opt/instructrec/push_replicas.py --replicas triton-replicas:8001 -- \\
        ranker --checkpoint /data/checkpoints/ranker --repository /models

``--replicas`` names a headless Service: its DNS name resolves to the address of every ready Triton pod, and
each one becomes a ``--push ADDRESS:PORT`` of the export command (canary inference on each, rollback of all
on any failure; see tools/export/push.py). The arguments after ``--`` are the export command's own.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def replica_addresses(host: str, port: int) -> list[str]:
    """``ADDRESS:PORT`` of every address ``host`` resolves to, sorted; IPv6 in brackets, as gRPC takes it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({info[4][0] for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


def export_command(replicas: list[str], export_args: list[str]) -> list[str]:
    """The ``instructrec export`` command line that pushes to every replica."""
    pushes = [arg for addr in replicas for arg in ("--push", addr)]
    return ["instructrec", "export", *export_args, *pushes]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", required=True, metavar="HOST:PORT",
                        help="Headless Service of the Triton pods and their gRPC port.")
    parser.add_argument("export_args", nargs=argparse.REMAINDER, help="-- then the `instructrec export` arguments.")
    args = parser.parse_args(argv)
    export_args = args.export_args[1:] if args.export_args[:1] == ["--"] else args.export_args
    if not export_args:
        parser.error("give the export arguments after --")
    host, port = args.replicas.rsplit(":", 1)
    try:
        replicas = replica_addresses(host, int(port))
    except socket.gaierror as exc:
        sys.exit(f"cannot resolve {host}: {exc}; is Triton running with ready pods?")
    command = export_command(replicas, export_args)
    print("running: " + " ".join(command), flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
