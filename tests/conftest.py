import os

from hypothesis import HealthCheck, settings

# deadline=None: the first call of a kernel compiles it. "ci" is the default profile: derandomized,
# so a run is reproducible and a submission's CI sees the examples its author's run saw; the
# "thorough" profile (HYPOTHESIS_PROFILE=thorough) explores with fresh random examples.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    derandomize=True,
)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
