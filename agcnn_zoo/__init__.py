"""agcnn-zoo"""
