"""Evaluation: how good the forecasts and the buffers were, on data they did not see.

- `evaluation.metrics`: the error metrics (MAE, MSE, RMSE, bias, MASE, MSSE, RMSSE and their window means),
  coverage, pinball loss and the run's MASE summary, one signature for all of them in the style of
  `utilsforecast.losses` (`metric(df, models, id_col, target_col) -> one row per id, one column per model`).
- `evaluation.windows`: the backtest windows' cumulative sums over the exposures a buffer covers (lead time, review
  period + lead time): window errors and demand, the leave-one-out sigma of the other windows.
- `evaluation.coverage`: how often the buffers and the forecast quantiles covered the backtest's demand (the
  published buffer coverage, the calibration table's pinball loss and coverage per class).
- `evaluation.replay`, `evaluation.simulate`: the recommendations replayed over the held-out demand, and the
  disruption scenarios.

Layers: `metrics` and `windows` import no other buffercast package (forecasting/ and buffers/ build on them);
`coverage` imports only them; `replay` and `simulate` import buffers/. This file imports nothing, so that importing
`evaluation.metrics` from forecasting/ never pulls in `replay` (and buffers/ with it).
"""
