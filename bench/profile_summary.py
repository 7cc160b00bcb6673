"""Summarise a py-spy raw (collapsed) profile: self and inclusive share per function."""

from __future__ import annotations

import sys
from collections import Counter


def main(path: str, top: int = 40) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in open(path, encoding="utf-8"):  # noqa: PTH123, SIM115
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"samples: {total}")
    print("\n-- self --")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")
    print("\n-- inclusive --")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
