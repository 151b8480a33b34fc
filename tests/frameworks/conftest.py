"""Framework tests run each framework's own code in its own venv (`make test-frameworks`):
their pins conflict with each other and with the main venv. The fixtures are the plug-in
tests' (a real contained executor and a real PRM server with a tiny model)."""

from tests.integrations.conftest import prm_url, reward_env  # noqa: F401
