"""The security cost of merge committees: how likely attackers capture a committee majority.

A round's committee is ``k`` submitters drawn without replacement from the round's ``n`` submitters; the
attackers hold ``a = round(p * n)`` of them. They finalize a model of their choice in that round exactly when
they hold a strict majority of the committee (more than k / 2 seats), and the draw is uniform, so the
number of attacker seats is **hypergeometric** (n, a, k): exact for a given round, and what this script
prints. The binomial (k, p) is what it tends to for n much larger than k (the ``n = inf`` column), and is
slightly larger for p < 1/2 (drawing an attacker makes the next one less likely without replacement), so
it is the conservative figure when n is unknown. Over a schedule of R rounds, drawn independently, the
chance of at least one captured round is 1 - (1 - P)^R.

    python scripts/committee_security.py            # the README table
    python scripts/committee_security.py --n 64 --rounds 8
"""

from __future__ import annotations

import argparse
from math import comb

SIZES = (5, 9, 15, 21, 31, 41)
FRACTIONS = (0.05, 0.10, 0.20, 0.30, 0.40)


def hypergeometric_capture(n: int, attackers: int, k: int) -> float:
    """P(more than k/2 of k seats drawn from n go to the ``attackers``)."""
    total = comb(n, k)
    return (
        sum(comb(attackers, seats) * comb(n - attackers, k - seats) for seats in range(k // 2 + 1, k + 1))
        / total
    )


def binomial_capture(p: float, k: int) -> float:
    return sum(comb(k, seats) * p**seats * (1 - p) ** (k - seats) for seats in range(k // 2 + 1, k + 1))


def over_schedule(per_round: float, rounds: int) -> float:
    return 1 - (1 - per_round) ** rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="submitters per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=100, help="rounds in the schedule (default 100)")
    arguments = parser.parse_args()
    header = " | ".join(f"k={k}" for k in SIZES)
    print(
        f"per round, n={arguments.n} (hypergeometric); in brackets n=inf (binomial); "
        f"then over R={arguments.rounds}"
    )
    print(f"| p | {header} |")
    print("|---|" + "---|" * len(SIZES))
    for p in FRACTIONS:
        attackers = round(p * arguments.n)
        cells = []
        for k in SIZES:
            exact = hypergeometric_capture(arguments.n, attackers, k)
            cells.append(
                f"{exact:.1e} ({binomial_capture(p, k):.1e}) / {over_schedule(exact, arguments.rounds):.1e}"
            )
        print(f"| {p:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
