"""Hydra configuration of `python -m diagnosis.search` (groups: task, policy, search, monitor).

`monitor=fidel` is not a YAML file: its node is built from the dataclasses that define the monitor
(`monitor.build.settings_node`: MonitorRecipe's settings and every FidelConfig field with their defaults), so the
defaults live in one place and a key the monitor does not have is refused by Hydra.
"""

from hydra.core.config_store import ConfigStore

from monitor.build import settings_node

ConfigStore.instance().store(group="monitor", name="fidel", node=settings_node())
