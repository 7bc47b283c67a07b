"""The ``layerfed`` command line: parses arguments, calls one command, maps errors to exit codes.

Nothing imports this module; it imports the engine and the commands. Every :class:`LayerfedError` ends
the process with its own exit code and a one-line message, so systemd and scripts can tell a
configuration mistake from a transient failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from agent import __version__
from agent.errors import LayerfedError

Command = Callable[[argparse.Namespace], int]
QUIET_LIBRARIES = ("transitions", "amqtt", "web3", "urllib3", "asyncio")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerfed",
        description="Decentralised layer-wise federated self-supervised learning for edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"layerfed {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default WARNING)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_bench(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a whole federation on this machine on the embedded defaults",
        description="N peers in one process: in-process chain, in-process MQTT broker, local content store.",
    )
    demo.add_argument("--peers", type=int, default=4, help="number of peers (default 4)")
    demo.add_argument(
        "--preset", default="default", help="smoke (a minute or two) or default (learns something)"
    )
    demo.add_argument("--mode", default="lw", help="lw, prog or e2e (default lw)")
    demo.add_argument("--seed", type=int, default=0, help="federation seed (default 0)")
    demo.add_argument(
        "--data", type=Path, default=None, help="Fashion-MNIST directory (default: the Debian package's)"
    )
    demo.add_argument(
        "--work-directory", type=Path, default=None, help="state and content (default: a temporary one)"
    )
    demo.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
    demo.set_defaults(handler=_run_demo)


def _run_demo(arguments: argparse.Namespace) -> int:
    from agent.commands.demo import run_demo
    from agent.learning.modes import TrainingMode

    with tempfile.TemporaryDirectory(prefix="layerfed-demo-") as temporary:
        work_directory = arguments.work_directory or Path(temporary)
        report = run_demo(
            peers=arguments.peers,
            preset_name=arguments.preset,
            data_directory=arguments.data,
            work_directory=work_directory,
            mode=TrainingMode.parse(arguments.mode),
            seed=arguments.seed,
        )
    print()
    for peer in report.peers:
        print(f"peer {peer.address}: final model {peer.final_model_cid}")
    identical = len({peer.final_model_cid for peer in report.peers}) == 1
    print(f"all peers ended with the same model: {'yes' if identical else 'NO'}")
    print(f"rounds finalized on chain: {len(report.rounds_finalized)}")
    print(f"linear-probe accuracy {report.linear_probe_accuracy:.4f}, kNN accuracy {report.knn_accuracy:.4f}")
    share = report.protocol_seconds / max(report.training_seconds + report.protocol_seconds, 1e-9)
    print(
        f"training {report.training_seconds:.1f} s, protocol {report.protocol_seconds:.1f} s "
        f"({share:.1%} of busy time), wall {report.wall_seconds:.1f} s"
    )
    if arguments.json is not None:
        arguments.json.write_text(report.to_json())
    return 0 if identical else 1


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.benchmark import runner

    bench = commands.add_parser(
        "bench",
        help="compare lw, prog and e2e on accuracy, memory, GFLOPs and bytes",
        description="Compare LW-FedSSL, Prog-FedSSL and end-to-end FedSSL from the same seed and partitions.",
    )
    runner.add_arguments(bench)
    bench.set_defaults(handler=runner.run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(arguments.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    handler: Command = arguments.handler
    try:
        return handler(arguments)
    except LayerfedError as error:
        print(f"layerfed: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
