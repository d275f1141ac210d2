"""Test harness for threadring.ringhub: throwaway servers and an Ansible runner."""
