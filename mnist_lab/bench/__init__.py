"""Speed and accuracy benchmarks, measured on this machine in one run; writes ``bench.json``.

    python -m mnist_lab.bench                      # all sub-benchmarks, full size
    python -m mnist_lab.bench data loop --quick    # some of them, small
    python -m mnist_lab.bench machine --out machine.json
    python -m mnist_lab.bench time --preset fast --seeds 5
    python -m mnist_lab.bench accuracy --presets mlp cnn --seeds 3
    python -m mnist_lab.bench accuracy --presets best --mix best:0,1,2 resnet:0,1
    python -m mnist_lab.bench zoo --presets fast cnn vit rnn --seeds 3
    python -m mnist_lab.bench photos --photo-seeds 0 7 3

Sub-benchmarks (one module each):
  machine   CPU/GPU, ISA, native bf16; matmul GFLOP/s per dtype; the preset net's training
            images/s per precision x layout; what `auto` precision and layout resolve to here;
            the same net under torch.compile (module.compile=true) vs eager, and its compile time
  families  training images/s of each model family (CNN, MLP, ViT variants, timm vs
            torchvision, RNNs) in float32 and bf16: what `auto` knows per family
  data      images/s of our batched pipeline vs the torchvision baseline (Dataset + PIL
            transforms + DataLoader)
  loop      seconds/epoch of the Lightning loop vs a plain PyTorch loop, same model and batches
  time      a preset's final test accuracy (mean ± std over seeds) and median train_seconds;
            --crossing adds when test accuracy first crossed 99.0/99.5 % (secondary)
  accuracy  test accuracy mean ± std over seeds per preset (+ ensemble/TTA of the seeds);
            every run keeps its folder under logs/bench/accuracy/PRESET/seedN and a rerun
            reuses the finished ones (same config), so long presets can run across sessions;
            --mix ensembles runs of several presets
  augment   ms per batch of the robust augmentation, per stage, vs kornia's (if installed)
  robustness  presets (default fast, robust) x seeds: clean and corruption-suite accuracy,
            train seconds and the time ratio to the first preset
  zoo       the model-zoo table per preset: parameters, multiply-adds per image, median train
            seconds, test accuracy mean ± std over seeds, mean over the corruption suite, ONNX
            ms per image at batch 1 (runs: accuracy's kept ones, trained where missing)

  photos    phone photos rendered by mnist_lab.photos (--photo-seeds, default 0 7; 1,000 each)
            read by the shipped model (or --model): accuracy per seed, median ms per photo of
            read + decode + to_mnist + model, per 12-MP JPEG (50 photos upscaled to 4000x3000),
            and `predict output=json`'s wall time per photo, start-up included

``--quick`` runs every training with ``debug=tiny`` (conf/debug/tiny.yaml): it checks the
machinery in minutes; its numbers mean nothing.
"""
