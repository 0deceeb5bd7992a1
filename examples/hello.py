"""The bundled example: a tiny "training" loop that needs nothing but Python.

Run it through Conveyor with ``scripts/demo`` (or ``conveyor enqueue examples/hello.py``).
"""

import argparse
import math
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    print(
        f"hello from task {os.environ.get('CLEARML_TASK_ID', '?')} on python {sys.version.split()[0]}"
    )
    loss = 1.0
    for epoch in range(1, args.epochs + 1):
        loss *= math.exp(-args.lr * epoch)
        print(f"epoch {epoch}/{args.epochs} loss={loss:.4f}")
        time.sleep(0.1)
    print("done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
