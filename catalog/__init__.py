"""The catalog: workspace layout, Parquet parts, DuckDB views, the content-addressed image store."""
