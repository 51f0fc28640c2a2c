"""archs"""
