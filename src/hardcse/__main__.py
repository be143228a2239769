"""``python -m hardcse``: the command line, also for launchers (``torchrun -m hardcse train ...``)."""

from hardcse.cli import main

if __name__ == "__main__":
    main()
