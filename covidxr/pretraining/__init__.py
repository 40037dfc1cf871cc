"""Self-supervised pretraining of a ResNet50 trunk on unlabeled X-rays (``covidxr-pretrain``)."""
