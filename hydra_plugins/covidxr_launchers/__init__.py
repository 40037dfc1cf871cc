"""covidxr's Hydra plugins: found by Hydra in its ``hydra_plugins`` namespace."""
