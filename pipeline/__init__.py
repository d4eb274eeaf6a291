"""The pure pipeline: the stages from validated sales to published tables, the output contracts, the plots and the report.

No Prefect, no MLflow, no file or network I/O: `flows/` wires these functions into tasks, reads the inputs and writes the outputs.
"""
