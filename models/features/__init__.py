"""Audio features for the reaction model: the REACT-style 78-d MFCC frames and 16 kHz resampling."""
