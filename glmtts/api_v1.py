"""Placeholder until the saved-voices and batch-jobs API lands (helper 7 replaces this file).

Contract used by app.py: mount_v1(api, pipeline, settings) only adds routes and returns (voices, jobs);
app.py calls voices.load_all() and jobs.recover() after the pipeline is loaded and warmed up.
"""


class _Nothing:
    def load_all(self) -> None:
        pass

    def recover(self) -> None:
        pass


def mount_v1(api, pipeline, settings):
    return _Nothing(), _Nothing()
