# conftest.py - pytest fixtures of the telgate integration tests: a factory
# that starts the Telnyx stand-in and the telgate processes on 127.0.0.1 and,
# at teardown, SIGTERMs them and asserts each exits 0 within 5 s (SPEC 6.5).
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _finish(gates, failed):
    errors = []
    for g in gates:
        try:
            g.stop_all()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            g.kill_all()
        if failed or errors:
            print("\n===== logs of %s =====\n%s" % (g.root, g.logs()))
        else:
            shutil.rmtree(g.root, ignore_errors=True)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def make_gate(request):
    """Factory: make_gate(conf={...}, verifiers=2, standin_args=[...], ...) -> Gate.
    Every gate made is stopped at teardown with the exit-status assertion."""
    gates = []

    def make(**kw):
        g = helpers.Gate(**kw)
        gates.append(g)
        return g
    yield make
    rep = getattr(request.node, "rep_call", None)
    _finish(gates, rep is None or rep.failed)


@pytest.fixture
def gate(make_gate):
    """The default pipeline: stand-in, spine, actuator, 2 verifiers, ingress."""
    return make_gate()


@pytest.fixture(scope="module")
def module_gate(request):
    """One default pipeline shared by a whole module (state shared on purpose)."""
    g = helpers.Gate(**getattr(request.module, "GATE_OPTIONS", {}))
    yield g
    failed = any(getattr(item, "rep_call", None) is not None and item.rep_call.failed
                 for item in request.session.items if item.module is request.module)
    _finish([g], failed)
