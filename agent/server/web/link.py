"""Print a one-time login path for a server database: ``python -m agent.server.web.link DB``.

For scripts (``scripts/demo``) that start the embedded server inside ``conveyor daemon`` and
want to hand the user a link that logs the browser in once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.server.store import Store
from agent.server.web.session import issue_login_link


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m agent.server.web.link <server.db>", file=sys.stderr)
        return 2
    store = Store(Path(argv[0]))
    try:
        print(f"/login/once/{issue_login_link(store)}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
