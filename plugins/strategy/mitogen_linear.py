"""Mitogen's linear strategy, by the name ansible.cfg asks for.

Mitogen (pinned in requirements.txt) keeps one Python running on each host and runs every
module in it, instead of starting Python and unpacking the module again for each task. A
converge does the same work with about half the CPU. This file only re-exports the strategy
from the installed package, so no configuration names a path inside one virtualenv.
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
