"""Imports the installed ``servicekit`` package before pytest collects ``servicekit/tests``.

The root pytest configuration uses ``--import-mode=importlib``, which names
``servicekit/tests/conftest.py`` ``servicekit.tests.conftest`` and, for a parent not imported
yet, registers the directory ``servicekit/`` itself as the module ``servicekit`` (a namespace
without the package's code): ``from servicekit.app import ...`` would then fail. With the real
package imported first, pytest finds it in ``sys.modules`` and keeps it. Cheap: the package's
``__init__`` imports nothing.
"""

import servicekit  # noqa: F401
