"""The application layer: the KPFlow experiments, the ``report`` command and its figures."""
