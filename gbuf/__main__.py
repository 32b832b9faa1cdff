"""``python -m gbuf`` (and ``torchrun -m gbuf train ...``) runs the CLI."""

from gbuf.cli import main

if __name__ == "__main__":
    main()
