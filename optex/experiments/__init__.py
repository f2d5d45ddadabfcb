"""One runner per paper experiment: a typed ``Config`` -> ``run(config) -> pandas.DataFrame``."""
