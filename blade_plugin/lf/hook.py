"""Post-import hook that teaches LLaMA-Factory about blade-plugin, installed by a `.pth` file.

LLaMA-Factory 0.9.5 has no plugin entry point, and importing `llamafactory.data.template` eagerly costs
seconds, so instead of importing anything this module puts a finder on `sys.meta_path` that waits for
LLaMA-Factory's own modules to be imported and then registers our templates, datasets and recipe
placeholders (see `lf_registry`). Cost at interpreter start-up: one small module import.

Set `BLADE_PLUGIN_DISABLE_HOOK=1` to switch it off.
"""

from __future__ import annotations

import os
import sys

DISABLE_ENV = "BLADE_PLUGIN_DISABLE_HOOK"
PTH_NAME = "blade_plugin_llamafactory.pth"
# A .pth line must start with `import`; the try keeps an uninstalled package from breaking every interpreter.
PTH_LINE = 'import sys; exec("try:\\n import blade_plugin.lf.hook\\nexcept ImportError:\\n pass")\n'

# module imported by llamafactory -> function in blade_plugin.lf.registry to call right after it executes
_TARGETS = {
    "llamafactory.data.template": "register_templates",
    "llamafactory.data.parser": "patch_dataset_parser",
    "llamafactory.hparams.parser": "patch_read_args",
}


class _PostImportFinder:
    """Wraps the real loader of each target module so our callback runs once it has executed.

    Duck-typed rather than subclassing importlib.abc: importing that module alone would add to every
    interpreter's start-up (docs/benchmarks.md).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WrappedLoader(spec.loader, _TARGETS[fullname])
        return spec


class _WrappedLoader:
    def __init__(self, loader, callback_name: str):
        self._loader = loader
        self._callback_name = callback_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            from . import registry as lf_registry

            getattr(lf_registry, self._callback_name)(module)
        except Exception as err:  # never break llamafactory itself because of the plugin
            import warnings

            warnings.warn(f"blade-plugin: could not register with {module.__name__}: {err!r}", stacklevel=2)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


def install() -> bool:
    """Put the finder first on sys.meta_path (idempotent). Returns False when disabled by env var."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    return True


def apply_now() -> None:
    """For processes where llamafactory was imported before the hook (e.g. no .pth): patch in place."""
    from . import registry as lf_registry

    for name, callback in _TARGETS.items():
        import importlib

        module = sys.modules.get(name) or importlib.import_module(name)
        getattr(lf_registry, callback)(module)


install()
