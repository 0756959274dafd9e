"""`python -m vllm_elastic.tools.tune MODEL --prompts ... --min-agreement ...`"""

from vllm_elastic.tools.tune.command import main

if __name__ == "__main__":
    main()
