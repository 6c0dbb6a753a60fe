"""Every built-in layer, one module per family; importing this package
registers them all (each module decorates its classes with `register`)."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
