"""Method implementations (one subpackage per method) and the reference rows. Never imports the pipeline."""
