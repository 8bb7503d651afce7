"""Everything the Prefect tasks call, free of Prefect: MNIST files and Parquet splits, the
CSV reader and scoring writers, the model registry, atomic files, plots, settings.

Tested without a Prefect backend. May import model/, NumPy, pyarrow, pandas, joblib and
Pillow; never prefect, tasks/, flows/ or cli/.
"""
