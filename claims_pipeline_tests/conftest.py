"""Settings shared by every test module."""

from hypothesis import settings

# No per-example deadline: it is a wall-clock assertion, and a busy CI machine (or the first
# example paying for a cache) trips it on code that is not slow.
settings.register_profile("claims", deadline=None)
settings.load_profile("claims")
