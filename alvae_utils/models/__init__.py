"""Networks: the ResNet-18 task model T and the loss-prediction module P (:mod:`.resnet`), the VAE V (:mod:`.vae`)."""
