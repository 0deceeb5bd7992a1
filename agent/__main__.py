"""``python -m agent`` runs the ``conveyor`` command line."""

from agent.cli import main

if __name__ == "__main__":
    main()
