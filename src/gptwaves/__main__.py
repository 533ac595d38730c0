"""``python -m gptwaves`` (also what ``torchrun -m gptwaves train`` runs)."""

from .cli import entry

if __name__ == "__main__":
    entry()
