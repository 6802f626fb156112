"""``python -m pmoe_rl``: list the commands."""

print("""pmoe-rl commands:
  python -m pmoe_rl.train --env ENV_ID [options]   train a PMOE (mixture) or Gaussian policy; --help for options
  python -m pmoe_rl.evaluate RUN_DIR [options]     evaluate a saved run or checkpoint; --help for options
  python -m pmoe_rl.collect ...                    make Minari datasets from trained runs; --help for options
  python -m pmoe_rl.imitate --expert RUN_DIR       online imitation of an expert (SSO, Adam, SGD); --help
  python -m pmoe_rl.plot RUN_DIRS... --out DIR     curves, tables, IQM and performance profiles of runs""")
