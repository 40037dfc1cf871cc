"""Hydra's Ray launcher with covidxr's report of a Ray node that dies mid-sweep: one line.

Hydra finds launchers only in the ``hydra_plugins`` namespace, so the subclass lives here and
``launcher=ray`` names it. Hydra imports every module of that namespace when it looks for plugins:
without the ``ray`` extra this one defines nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:
    RayLauncher = None

if RayLauncher is not None:
    from covidxr.utils.runner import exit_on_ray_node_failure

    class CovidxrRayLauncher(RayLauncher):
        """Ray tasks as Hydra jobs; a node, raylet or worker process lost is one line."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            with exit_on_ray_node_failure(str(self.config.hydra.sweep.dir)):
                return super().launch(job_overrides, initial_job_idx)
