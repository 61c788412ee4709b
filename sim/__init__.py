"""Running the datapath: backends, the cycle model, the CLI and its reports."""
