from tsp_mlflow.cli import main

main()
