"""The ``layerfed`` command line: parses arguments, calls one command, maps errors to exit codes.

Nothing imports this module, and it imports only the commands (and the error tree, whose codes it maps).
Every :class:`LayerfedError` ends the process with its own exit code and a one-line message, so systemd
and scripts can tell a configuration mistake from a transient failure; any other exception is a bug: it is
logged with its traceback and ends the process with 70. Exit codes are :data:`agent.errors.EXIT_CODES`,
the table the README documents.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from agent import __version__
from agent.commands.aggregation_options import (
    add_aggregation_arguments,
    aggregation_from_arguments,
    any_aggregation_argument,
)
from agent.commands.privacy_options import add_privacy_arguments, privacy_from_arguments
from agent.errors import (
    EXIT_BUG,
    EXIT_CONFIGURATION,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_SUCCESS,
    ConfigurationError,
    LayerfedError,
)

logger = logging.getLogger("layerfed")

Command = Callable[[argparse.Namespace], int]
ARGPARSE_USAGE_EXIT = 2  # what argparse exits with on a bad command line; ours is EXIT_CONFIGURATION
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
    _add_agent(commands)
    _add_contract(commands)
    _add_status(commands)
    _add_federation(commands)
    return parser


def _add_agent(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = commands.add_parser("agent", help="run this device's agent", description="This device's agent.")
    actions = agent.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="take part in the federation until its schedule is complete",
        description="Run the round engine against the configured chain, IPFS node and MQTT broker.",
    )
    run.add_argument("--config", type=Path, required=True, help="agent configuration (TOML)")
    run.set_defaults(handler=_run_agent)
    init_key = actions.add_parser(
        "init-key",
        help="create this device's key (once; mode 0600) and print its address",
        description="Create the key file if it is absent (never replaced), then print the account's address.",
    )
    init_key.add_argument("--key-file", type=Path, required=True, help="where the key lives")
    init_key.set_defaults(handler=_init_key)


def _init_key(arguments: argparse.Namespace) -> int:
    from agent.commands.run_agent import init_key

    print(init_key(arguments.key_file))
    return 0


DEFAULT_CONFIG = Path("/etc/layerfed/agent.toml")


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="how this device's agent and its federation are doing (works when the agent is stopped)",
        description="Agent process, round and stage, last update and merge, peers, chain sync, disk, memory. "
        f"Exit code {EXIT_SUCCESS} when the agent is running, {EXIT_NOT_RUNNING} when it is not.",
    )
    status.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"agent configuration (default {DEFAULT_CONFIG})"
    )
    status.set_defaults(handler=_status)


def _status(arguments: argparse.Namespace) -> int:
    from agent.commands.agent_config import load_agent_config
    from agent.commands.status import status_report

    report = status_report(load_agent_config(arguments.config))
    print(report.render())
    return EXIT_SUCCESS if report.running else EXIT_NOT_RUNNING


def _run_agent(arguments: argparse.Namespace) -> int:
    from agent.commands.agent_config import load_agent_config
    from agent.commands.run_agent import run_agent

    final_model = run_agent(load_agent_config(arguments.config))
    print(final_model)
    return 0


def _add_contract(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contract = commands.add_parser(
        "contract", help="the Coordinator contract", description="Coordinator contract."
    )
    actions = contract.add_subparsers(dest="action", required=True, metavar="ACTION")
    deploy = actions.add_parser(
        "deploy",
        help="start a new federation: pin the genesis model and deploy a Coordinator",
        description="Pin the genesis model of a training recipe and deploy a Coordinator for it.",
    )
    deploy.add_argument("--chain-url", required=True, help="JSON-RPC URL of an Ethereum node")
    deploy.add_argument(
        "--key-file", type=Path, required=True, help="deployer key (created if absent, mode 0600)"
    )
    deploy.add_argument(
        "--recipe", type=Path, default=None, help="training recipe JSON (default: ResNet, lw)"
    )
    deploy.add_argument("--mode", default="lw", help="lw, prog or e2e, when no recipe is given (default lw)")
    deploy.add_argument("--seed", type=int, default=0, help="federation seed, when no recipe is given")
    deploy.add_argument("--rounds-per-stage", type=int, default=2)
    deploy.add_argument("--quorum", type=int, required=True, help="submissions that close a round")
    deploy.add_argument("--round-duration", type=int, default=3600, help="seconds per phase (default 3600)")
    deploy.add_argument(
        "--allow", action="append", default=[], help="allow an address (or found, by vote); repeatable"
    )
    deploy.add_argument("--allowlist", type=Path, default=None, help="file of addresses to allow, one a line")
    deploy.add_argument(
        "--membership",
        default="allowlist",
        help="allowlist (default: the deployer admits), vote (members admit by majority), open (demos only)",
    )
    deploy.add_argument(
        "--strike-limit", type=int, default=None, help="strikes in a row that suspend (default 2; 0: never)"
    )
    deploy.add_argument(
        "--suspension-rounds", type=int, default=None, help="first suspension in rounds (default 4, doubling)"
    )
    deploy.add_argument(
        "--committee-threshold",
        type=int,
        default=0,
        help="rounds with more submissions than this are merged by a committee (default 0: never)",
    )
    deploy.add_argument(
        "--committee-size", type=int, default=None, help="seats of a merge committee (default 31)"
    )
    deploy.add_argument("--ipfs", default="/ip4/127.0.0.1/tcp/5001/http", help="IPFS RPC API multiaddress")
    deploy.add_argument(
        "--store-directory", type=Path, default=None, help="use a local content store instead"
    )
    add_aggregation_arguments(deploy)
    add_privacy_arguments(deploy)
    deploy.set_defaults(handler=_deploy_contract)
    admit = actions.add_parser(
        "admit",
        help="let devices register: allow them (deployer key) or vote for them (a member's key, by vote)",
        description="Allow addresses on a permissioned federation, or vote for them when members admit.",
    )
    admit.add_argument("addresses", nargs="*", help="addresses to admit")
    admit.add_argument("--file", type=Path, default=None, help="file of addresses to admit, one a line")
    admit.add_argument("--chain-url", required=True, help="JSON-RPC URL of an Ethereum node")
    admit.add_argument("--contract", required=True, help="the Coordinator's address")
    admit.add_argument("--key-file", type=Path, required=True, help="the deployer's key, or a member's")
    admit.set_defaults(handler=_admit)


def _admit(arguments: argparse.Namespace) -> int:
    from agent.commands.membership import admit_addresses

    for line in admit_addresses(
        arguments.chain_url, arguments.contract, arguments.key_file, arguments.addresses, arguments.file
    ):
        print(line)
    return 0


def _add_federation(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    federation = commands.add_parser(
        "federation", help="the whole federation, as the chain records it", description="The federation."
    )
    actions = federation.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="per round: who submitted, who attested what, which model finalized; each participant's record",
        description="Read the Coordinator alone (any machine that reaches the chain) and print the rounds, "
        "a participant-by-round grid and every participant's record.",
    )
    status.add_argument(
        "--config", type=Path, default=None, help="take the chain and contract from an agent configuration"
    )
    status.add_argument("--chain-url", default=None, help="JSON-RPC URL of an Ethereum node")
    status.add_argument("--contract", default=None, help="the Coordinator's address")
    status.add_argument("--rounds", type=int, default=20, help="how many recent rounds to show (default 20)")
    status.add_argument("--json", action="store_true", help="print JSON instead of the table")
    status.set_defaults(handler=_federation_status)
    verify = actions.add_parser(
        "verify",
        help="re-merge a finalized round from the chain and IPFS: is its canonical model the merge?",
        description="Re-merge a finalized round's updates as an honest elector does and compare with its "
        "canonical model; for a committee round, replay the committee's draw too. Exit 65 when it fails.",
    )
    verify.add_argument("--round", type=int, required=True, help="the finalized round to check")
    verify.add_argument(
        "--config", type=Path, default=None, help="take chain, contract and store from an agent configuration"
    )
    verify.add_argument("--chain-url", default=None, help="JSON-RPC URL of an Ethereum node")
    verify.add_argument("--contract", default=None, help="the Coordinator's address")
    verify.add_argument("--ipfs", default=None, help="IPFS RPC API multiaddress (default: the local node)")
    verify.add_argument(
        "--store-directory", type=Path, default=None, help="read from a local content store instead"
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of text")
    verify.set_defaults(handler=_federation_verify)


def _federation_status(arguments: argparse.Namespace) -> int:
    from agent.commands.federation_status import read_federation_status

    status = read_federation_status(
        arguments.config, arguments.chain_url, arguments.contract, rounds_shown=max(1, arguments.rounds)
    )
    print(status.to_json() if arguments.json else status.render())
    return 0


def _federation_verify(arguments: argparse.Namespace) -> int:
    from agent.commands.federation_verify import require_holds, verify_federation_round

    report = verify_federation_round(
        arguments.round,
        config=arguments.config,
        chain_url=arguments.chain_url,
        contract=arguments.contract,
        ipfs_address=arguments.ipfs,
        store_directory=arguments.store_directory,
    )
    print(report.to_json() if arguments.json else report.render())
    require_holds(report)
    return 0


def _deploy_contract(arguments: argparse.Namespace) -> int:
    from agent.commands.deploy import (
        default_recipe,
        deploy_federation,
        load_allowlist,
        load_recipe,
        parse_membership,
        select_store,
    )

    if arguments.recipe and any_aggregation_argument(arguments):
        raise ConfigurationError("give the aggregation rule in the recipe or as options, not both")
    if arguments.recipe and arguments.dp_clip is not None:
        raise ConfigurationError("give differential privacy in the recipe or as options, not both")
    config = (
        load_recipe(arguments.recipe)
        if arguments.recipe
        else default_recipe(
            arguments.mode,
            arguments.seed,
            aggregation_from_arguments(arguments),
            privacy_from_arguments(arguments),
        )
    )
    deployment = deploy_federation(
        arguments.chain_url,
        arguments.key_file,
        select_store(arguments.ipfs, arguments.store_directory),
        config,
        rounds_per_stage=arguments.rounds_per_stage,
        quorum=arguments.quorum,
        round_duration_seconds=arguments.round_duration,
        allowlist=(*arguments.allow, *(load_allowlist(arguments.allowlist) if arguments.allowlist else ())),
        membership=parse_membership(arguments.membership),
        strike_limit=arguments.strike_limit,
        suspension_rounds=arguments.suspension_rounds,
        committee_threshold=arguments.committee_threshold,
        committee_size=arguments.committee_size,
    )
    print(f"contract {deployment.contract_address}")
    print(f"genesis model {deployment.genesis_model_cid}")
    return 0


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
        "--backend",
        default="torch",
        help='training backend: torch (default) or ort (needs the extra "layerfed[ort]", x86_64 only)',
    )
    demo.add_argument(
        "--data", type=Path, default=None, help="Fashion-MNIST directory (default: the Debian package's)"
    )
    demo.add_argument(
        "--work-directory", type=Path, default=None, help="state and content (default: a temporary one)"
    )
    demo.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
    add_aggregation_arguments(demo)
    demo.set_defaults(handler=_run_demo)


def _run_demo(arguments: argparse.Namespace) -> int:
    from agent.commands.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="layerfed-demo-") as temporary:
        work_directory = arguments.work_directory or Path(temporary)
        report = run_demo(
            peers=arguments.peers,
            preset_name=arguments.preset,
            data_directory=arguments.data,
            work_directory=work_directory,
            mode=arguments.mode,
            seed=arguments.seed,
            backend=arguments.backend,
            aggregation=aggregation_from_arguments(arguments),
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
    if not identical:
        print("layerfed: the peers ended with different models (a bug)", file=sys.stderr)
        return EXIT_BUG
    return EXIT_SUCCESS


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The benchmark parses its own arguments (``layerfed bench --help`` lists them), so that building this
    # parser never imports torch: every other command starts in a fraction of a second.
    bench = commands.add_parser(
        "bench", add_help=False, help="compare lw, prog and e2e on accuracy, memory, GFLOPs and bytes"
    )
    bench.set_defaults(handler=_run_bench, forwarded=[])


def _run_bench(arguments: argparse.Namespace) -> int:
    from agent.commands.bench import run_bench

    return run_bench(arguments.forwarded)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except SystemExit as exited:  # argparse: --help and --version exit 0, a bad command line 2
        if exited.code == ARGPARSE_USAGE_EXIT:
            return EXIT_CONFIGURATION
        raise


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments, remaining = parser.parse_known_args(argv)
    if arguments.command == "bench":
        arguments.forwarded = remaining
    elif remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
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
        return EXIT_INTERRUPTED
    except Exception:  # deliberate: whatever no layer expected is a bug, reported as one
        logger.exception("layerfed %s failed unexpectedly; please report this traceback", arguments.command)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
