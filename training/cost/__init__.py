"""The job cost model: resource catalog, request/estimate schemas, LightGBM quantile model."""
