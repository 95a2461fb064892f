from mnist_lab.bench.cli import main

main()
