{
  # node-gyp entry point (node-gyp rebuild, @electron/rebuild, npm's implicit rebuild). The real build is
  # CMakeLists.txt: this target runs it through scripts/install.js, which leaves the addon in build/Release.
  "targets": [
    {
      "target_name": "bootstrapped_ce",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/bootstrapped_ce.node"],
          "action": ["node", "scripts/install.js"]
        }
      ]
    }
  ]
}
