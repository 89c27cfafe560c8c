"""Print the README's configuration table from the settings table (run by hand)."""

from __future__ import annotations

from tps.config.settings import defaults_table


def main() -> None:
    """Print one Markdown row per setting."""
    print("| setting | default | meaning |")
    print("|---|---|---|")
    for env, default, help_text in defaults_table():
        shown = f"`{default}`" if default else "(unset)"
        print(f"| `{env}` | {shown} | {help_text.replace('|', '&#124;')} |")


if __name__ == "__main__":
    main()
