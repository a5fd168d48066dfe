"""
Plugin modules for the tests, placed in a C{tmd/plugins/} directory of their own the
way a third-party distribution places them: the example of docs/plugins.md, one that
does not import, and one that cannot start.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

DOCUMENTATION = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def example() -> str:
    """The example plugin of docs/plugins.md: its first Python block."""
    return DOCUMENTATION.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```")[0]


BROKEN = "raise ImportError('the library this plugin needs is not installed')\n"

FAILING = '''
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

from tmd.interfaces import ITmdPlugin


@implementer(IPlugin, ITmdPlugin)
class Failing:
    name = "failing"
    description = "Cannot make its service."
    options = usage.Options

    def makeService(self, context, options):
        raise RuntimeError("the failing plugin always fails")


failing = Failing()
'''


def plugin_directory(test: SynchronousTestCase, **modules: str) -> Path:
    """
    A new directory for C{sys.path} holding C{tmd/plugins/NAME.py} for each of
    C{modules} (and no C{__init__.py}: those are tmd's); returns the directory.
    """
    top = Path(test.mktemp()).resolve()
    plugins = top / "tmd" / "plugins"
    plugins.mkdir(parents=True)
    for name, source in modules.items():
        (plugins / f"{name}.py").write_text(source, encoding="utf-8")
    return top
