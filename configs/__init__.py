"""The configuration: its one schema (`configs.schema`: every key, default and meaning) and the YAML generated from it
(`configs/default.yaml`)."""
