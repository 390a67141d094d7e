echo app changed
