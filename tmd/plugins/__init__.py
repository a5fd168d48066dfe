"""
tmd's plugin package: third-party distributions add modules here (in their own
C{tmd/plugins/}), found with C{twisted.plugin.getPlugins(..., tmd.plugins)}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
