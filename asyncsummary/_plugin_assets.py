"""A ``tf.Graph``'s plugin assets, written beside the event files as ``FileWriter`` does.

TF plugins (the projector, custom ones) attach small files to a graph through
``tensorflow.python.summary.plugin_asset``; ``FileWriter.add_graph`` writes them to
``<logdir>/plugins/<plugin name>/<asset name>`` before it returns, and TensorBoard's
plugins read them from there. They are written the same way here, synchronously:
they are few, small and written once per run, and a reader may look for them as
soon as ``add_graph`` returns. Only called with a ``tf.Graph``, so TensorFlow is
already imported.
"""

from __future__ import annotations

import os
from typing import Any

from ._storage import is_url

__all__ = ["write_plugin_assets"]

PLUGINS_DIR = "plugins"  # TF's _PLUGINS_DIR


def write_plugin_assets(graph: Any, logdir: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Write every plugin asset of ``graph`` under ``logdir``; return their paths."""
    from tensorflow.python.summary import plugin_asset

    written = []
    for container in plugin_asset.get_all_plugin_assets(graph):
        for name, content in container.assets().items():
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            if is_url(logdir):
                import fsspec

                path = f"{logdir.rstrip('/')}/{PLUGINS_DIR}/{container.plugin_name}/{name}"
                with fsspec.open(path, "wb", **(storage_options or {})) as f:
                    f.write(data)
            else:
                folder = os.path.join(logdir, PLUGINS_DIR, container.plugin_name)
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, name)
                with open(path, "wb") as f:
                    f.write(data)
            written.append(path)
    return written
