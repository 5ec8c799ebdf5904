"""``python -m convert`` runs the bitconvert CLI."""

from .cli.commands import main

if __name__ == "__main__":
    main()
